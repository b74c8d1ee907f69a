"""Word alignments from a translation model's cross-attention, scored against gold (AER).

extract     the library: subword pieces -> words, pooling, links (`align_words`, the one path
            every command uses), teacher-forced and own-translation alignment, and the heads a
            checkpoint is read with (`align_config_for`: its recorded aligning heads, else the mean)
symmetrize  combining two directions (intersection, union, grow-diag-final(-and))
gold        reading gold / Pharaoh links, precision, recall and AER
experiment  the layer x head x shift sweep and the heatmaps
cli         `python -m mt.align` (see docs/alignment.md)
"""

from mt.align.extract import AlignConfig, align_config_for, align_pairs, align_translations, align_words
from mt.align.gold import aer
from mt.align.symmetrize import symmetrize

__all__ = [
    "AlignConfig",
    "aer",
    "align_config_for",
    "align_pairs",
    "align_translations",
    "align_words",
    "symmetrize",
]
