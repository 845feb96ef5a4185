"""Models: HJCAG (the paper's) and the baselines, all with the same call signature."""
