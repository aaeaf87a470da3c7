"""The model: session → workload → engine + policy → timeline."""
