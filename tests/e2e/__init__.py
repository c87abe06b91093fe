"""Honk end to end against the simulators over real HTTP: a delivery from the simulated
GitHub to a pull request, with the scripted Claude, in one process."""
