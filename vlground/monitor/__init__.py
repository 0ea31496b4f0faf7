"""A grounding monitor: flag generated object words the model's aggregate heads did not read from the image.

The paper's practical implication (arXiv 2510.13796, "Implications"): grounding runs through a few
aggregate heads in the middle layers, so they can be monitored at generation time to detect object
hallucination. Pieces, one module each:

* :mod:`.labels`: POPE questions and CHAIR object words from COCO-format annotations (no torch);
* :mod:`.heads`: the heads to read (a ``boxheads`` result or a heads file) and random control sets;
* :mod:`.score`: attention capture inside a context manager and the grounding score;
* :mod:`.generate`: greedy decoding through the adapter with the capture in the same passes, and mitigation;
* :mod:`.backends`: prompts/images/words per adapter family; :mod:`.tasks`: pope, chair, testbed;
* :mod:`.evaluate`: AUROC / AUPRC with bootstrap CIs; :mod:`.run`: one evaluation end to end.

``vlground monitor`` is the command line (docs/monitor.md).
"""
