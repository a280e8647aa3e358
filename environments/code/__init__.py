"""Code environments: programs written line by line, graded by unit tests in the sandbox."""
