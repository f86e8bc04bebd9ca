"""The jobs the CLI runs, built from one resolver, one run folder and one evaluation:
distill (K teachers, T tasks), online / DAgger, sweep, drivers, export, evaluate."""
