"""Tools beside the commands: throughput benchmarking (`bench`) and cluster submission (`submit`)."""
