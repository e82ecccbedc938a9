"""The study of how quantization error depends on model size and training recipe.

:mod:`.world_corpus` writes the training text, :mod:`.family` names the model family (sizes,
recipes, seeds, checkpoint folders) and :mod:`.training` trains it.
"""
