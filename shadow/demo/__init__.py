"""The demo: a monolith, an extracted orders service with seeded differences, a second monolith
instance for noise cancellation, a load driver, and `shadow demo`, which wires them behind the
gateway and leaves a capture to analyse."""
