"""The DAG model: what a DAG file declares, its schedule, dates and states. Pure."""
