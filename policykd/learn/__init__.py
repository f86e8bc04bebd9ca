"""How a student learns from a buffer: temperature (targets), merging several teachers, losses,
metrics, student networks, and the Trainer (the only owner of the optimiser)."""
