"""The data layer: the IPD contract, readers, harmonisation of raw trial files, imputation and the simulator.

It knows nothing of models, tracking or reports.
"""
