"""Losses, train state, the train step and the trainer loop."""
