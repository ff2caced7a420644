"""One module per workload; each builds its items, runs the tools and returns its figures."""
