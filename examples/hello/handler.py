"""A Lambda-style handler: ``handler(event, context)`` returning statusCode and body."""


def handler(event: dict, context) -> dict:
    name = event.get("name", "world")
    return {"statusCode": 200, "body": {"message": f"hello, {name}", "request_id": context.request_id}}
