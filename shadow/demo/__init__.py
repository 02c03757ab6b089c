"""The demo: a monolith, an extracted orders service with seeded differences, a second monolith
instance for noise cancellation, a load driver, and the orchestration that wires them behind the
gateway and leaves a capture to analyse (the `shadow demo` command is shadow/cli/demo.py). Runs the
gateway as a user would, through the CLI in a child process; never imports mitmproxy."""
