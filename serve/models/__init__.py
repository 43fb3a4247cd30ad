"""Model artifacts: recognising layouts, exact conversion, the embedded default, and the artifacts CLI."""
