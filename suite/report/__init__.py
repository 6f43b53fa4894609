"""The reporter: records -> tables, figures, HTML, published claims and comparisons. Torch-free;
it reads records through ``vanex.records`` and never imports the engine or a task."""
