"""Developer-only programs, never installed: benchmarks, the load-test code (tools.loadtest)
and the documentation's screenshots. Each is a module run from the checkout with
`python -m tools.NAME` (docs/architecture.md, Layout)."""
