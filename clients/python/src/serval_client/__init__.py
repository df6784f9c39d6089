"""serval_client: deploy models on a serval server from Python.

The serval CLI's verbs over the server's admin API (``serval serve --require-auth``), with an
admin key (``serval auth create-key --role admin``). Standard library only.

    from serval_client import Serval
    s = Serval("http://serving:8080", key)
    model_id = s.models.upload("model.json", name="iris", framework="xgboost")
    s.endpoints.add(engine="xgboost", endpoint="iris", model_id=model_id)
    s.infer("iris", {"x0": 1, "x1": 2})
"""

from ._client import Serval, ServalError

__all__ = ["Serval", "ServalError"]
__version__ = "0.1.0"
