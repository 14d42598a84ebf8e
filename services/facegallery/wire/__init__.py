"""The API's contract as Python sees it: the messages both transports carry (pydantic models,
field for field the proto's) and the human wording of answers. It imports nothing of the
server, so the client package can carry it alone."""
