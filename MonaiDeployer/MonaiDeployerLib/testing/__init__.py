"""Sample data and the self-test scenarios the module's Reload & Test and the test suite run."""
