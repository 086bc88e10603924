"""From a plan to a run's files: each stage's config and its sbatch or local script."""
