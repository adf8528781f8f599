"""Lightning recipes: modules, data modules and the training entry point for each task."""
