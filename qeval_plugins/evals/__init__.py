"""qeval's lm-eval tasks: the task classes and the engines that answer their requests.

May import: ``core``, ``metrics``, ``storage``, ``backend`` (its public methods only).
"""
