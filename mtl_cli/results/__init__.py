"""What runs produce and compare: Δm against single-task baselines (:mod:`.delta_m`) and the
baselines file (:mod:`.baselines`). Pure Python: no torch."""
