"""In-process safety providers: PII detection, insecure-code rules and a guard prompt over any model."""
