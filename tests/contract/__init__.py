"""The contract layer: the contract and OpenAPI suites, against our own processes or,
in conformance mode, anyone's deployment. scripts/conformance.sh runs this folder."""
