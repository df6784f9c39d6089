"""serval's Python worker: runs one endpoint's clearml-style `Preprocess` code (and, where the model
is Python-only, the model) in a process the serval server controls.

Standard library only: numpy, scikit-learn, xgboost, ... are imported when the user's code or the
endpoint's engine needs them. The server starts it as
`python -u -c "<boot>" <dir holding this package>` and speaks the protocol in `protocol.py` over the
process's stdin and (a private copy of) its stdout.
"""
