"""Profiles and recipes: bounded YAML, typed schemas, value checks, executor traits and the stage graph."""
