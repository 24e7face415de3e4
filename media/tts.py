"""Speech as WAV files at the conference bridge's rate: espeak-ng speaks, sox converts; one file
per sentence, cached on disk by what was said (the same balance or greeting is rendered once).
Recorded prompts (a company's uploads) go through the same conversion and cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import wave
from pathlib import Path

VOICES = {"fr": "fr-fr", "en": "en-gb"}  # Debian's espeak-ng-data voices
SPEED_WPM = 150  # a little slower than espeak's 175: numbers over a phone line
# sox: mono, 16-bit, the bridge's rate; normalised to -3 dBFS so that every prompt is equally loud
_SOX_OUT = ["-c", "1", "-b", "16", "-e", "signed-integer"]


class TtsError(RuntimeError):
    pass


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TtsError(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise TtsError(f"{what}: exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[:300]}")


def duration_s(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


class Speech:
    """Renders and caches; counts hits and misses for the metrics."""

    def __init__(self, cache_dir: Path, rate: int):
        self.cache_dir = cache_dir
        self.rate = rate
        self.hits = 0
        self.misses = 0
        cache_dir.mkdir(parents=True, exist_ok=True)

    def _cached(self, key: str, make) -> Path:
        path = self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{self.rate}.wav"
        if path.exists():
            self.hits += 1
            return path
        self.misses += 1
        # rendered beside, renamed into place: a crash never leaves half a file in the cache
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp.wav")
        os.close(fd)
        try:
            make(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def sentence(self, text: str, language: str) -> Path:
        voice = VOICES[language]

        def make(out: Path) -> None:
            raw = out.with_suffix(".espeak.wav")
            try:
                # the text goes on stdin: never an option or a file name, whatever an operator wrote
                try:
                    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(raw), "--stdin"],
                                          input=text.encode(), capture_output=True, timeout=20)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise TtsError(f"espeak-ng: {exc}") from None
                if done.returncode != 0:
                    raise TtsError(f"espeak-ng: exit {done.returncode}: {done.stderr.decode(errors='replace')[:300]}")
                _run(["sox", str(raw), "-r", str(self.rate), *_SOX_OUT, str(out), "gain", "-n", "-3"], "sox")
            finally:
                raw.unlink(missing_ok=True)
        return self._cached(f"tts\0{voice}\0{SPEED_WPM}\0{text}", make)

    def recording(self, source: Path) -> Path:
        """A company's uploaded prompt (any format sox reads) at the bridge's rate."""
        stat = source.stat()

        def make(out: Path) -> None:
            _run(["sox", str(source), "-r", str(self.rate), *_SOX_OUT, str(out), "remix", "-", "gain", "-n", "-3"],
                 f"sox {source}")
        return self._cached(f"wav\0{source}\0{stat.st_size}\0{stat.st_mtime_ns}", make)
