"""Protocol codecs: the only place besides the API handlers that knows modal_proto messages."""
