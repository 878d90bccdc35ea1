"""Side-by-side benchmarks: localdns's cache against dnsmasq, unbound and Knot Resolver, and its webhook against a
minimal FastAPI endpoint. Run `python -m bench` (about ten minutes on 2 cores) or `python -m bench --quick`.
See docs/performance.md for how to read the results."""
