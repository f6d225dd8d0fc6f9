"""Wire contract shared by every layer: Environment {metadata, spec, status}, Runner, Condition. No I/O."""
