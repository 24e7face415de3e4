"""Decisions per second of numbering.classify over a realistic mix of dialled strings.

Run from the repo root:  python bench/classify_bench.py [--seconds 3] [--seed 1]

The mix approximates an office's outgoing calls: mostly French mobiles and
landlines, many internal extensions, some international (included countries
and elsewhere), a few short codes and emergency calls, and some misdials.
Digits are randomised inside each template so that no cache could help, and
a share of the inputs carries the separators or +33/0033 forms phones send.
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kemi.numbering import classify  # noqa: E402

# (share in %, label, template): '#' becomes a random digit.
MIX = [
    (30, "fr-mobile", "06########"),
    (8, "fr-mobile-07", "075#######"),
    (17, "fr-landline", "0[1-5]########"),
    (3, "fr-voip", "09########"),
    (3, "fr-+33", "+336########"),
    (2, "fr-0033", "00331########"),
    (2, "fr-spaced", "06 ## ## ## ##"),
    (15, "internal", "2###"),
    (3, "intl-landline", "[+4930#######|+44207946####|+3225######|0034912######]"),
    (3, "intl-mobile", "[+4915112######|+447912######|+31612######|0039312#######]"),
    (2, "intl-other", "[+1212555####|+4533######|+8816123######|+449012######]"),
    (1, "emergency", "[15|17|18|112]"),
    (1, "free", "[0800######|116###]"),
    (2, "special", "[0899######|3631|118###|1010]"),
    (3, "incomplete", "[06####|0033|2##|+44]"),
    (2, "not-dialable", "[0612345678;x|*31#|abc|0712######]"),
    (3, "premium-blocked", "08[1-9]#######"),
]


def expand(template: str, rnd: random.Random) -> str:
    if template.startswith("["):
        template = rnd.choice(template[1:-1].split("|"))
    out = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "#":
            out.append(rnd.choice("0123456789"))
        elif ch == "[":  # single-character range like [1-5]
            lo, hi = template[i + 1], template[i + 3]
            out.append(str(rnd.randint(int(lo), int(hi))))
            i += 4
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def build_inputs(count: int, seed: int) -> list:
    rnd = random.Random(seed)
    weights = [share for share, _, _ in MIX]
    picks = rnd.choices(MIX, weights=weights, k=count)
    return [expand(template, rnd) for _, _, template in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=20000)
    args = parser.parse_args()

    inputs = build_inputs(args.inputs, args.seed)
    for dialled in inputs[:2000]:  # warm up (imports, regex compilation in phonenumbers)
        classify(dialled)

    calls = 0
    categories: dict = {}
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for dialled in inputs:
            classify(dialled)
        calls += len(inputs)
    elapsed = time.perf_counter() - start

    for dialled in inputs:
        category = classify(dialled).category
        categories[category] = categories.get(category, 0) + 1
    shares = ", ".join(f"{name} {100 * n / len(inputs):.0f}%"
                       for name, n in sorted(categories.items(), key=lambda kv: -kv[1]))
    print(f"classify: {calls / elapsed:,.0f} decisions/s over {calls} calls in {elapsed:.1f}s "
          f"({len(inputs)} distinct inputs; mix: {shares})")


if __name__ == "__main__":
    main()
