"""Reports: what people (terminal, HTML) and scripts (JSON) read."""
