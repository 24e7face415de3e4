"""Call-routing core of the coworking office phone service (Kamailio KEMI)."""
