"""mt: machine-translation training with a Transformer whose cross-attention is first-class.

Commands: `python -m mt.train`, `mt.translate`, `mt.evaluate`, `mt.align`, `mt.compare`, `mt.average`,
`mt.serve`, `mt.data`.
"""

__version__ = "0.1.0"
