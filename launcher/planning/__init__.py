"""From a profile and a recipe to a typed plan: layouts, memory, time, calibration."""
