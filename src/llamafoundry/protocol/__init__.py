"""The wire format: the API's request bodies, answers, stream chunks and error envelopes, as pydantic models and
codecs to and from the service's records (`service/types.py`).

Both directions live here: the API parses a client's body into a `ChatRequest` and renders a `ChatResult` (or
stream updates) into JSON; a gateway forwarding to an upstream server writes the same `ChatRequest` back into a
body and reads the upstream's answer into a `ChatResult`. No HTTP objects: `api/` does the HTTP.
"""
