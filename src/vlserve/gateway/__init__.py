"""The request path between the HTTP edge and the engines: request intake and validation
(schemas), the one builder of engine requests, the one engine call (admission, cancel,
usage), the model catalog, and the simple endpoints' and Responses API's translations."""
