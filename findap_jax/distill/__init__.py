"""Preference distillation with a generative reward model: on-policy trajectories judged
for the outcome (FAP pairs) and for the first wrong step (SCP pairs)."""
