"""A stand-in for an OpenAI-compatible API: POST /v1/chat/completions answers in OpenAI's shape.
`python -m examples.ai_generation.fake_api` serves it on port 8703."""

from __future__ import annotations

from aiohttp import web

from examples.fake_server import run_forever


class ChatApi:
    def __init__(self) -> None:
        self.requests: list[dict] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        return app

    async def completions(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"error": {"message": "missing API key"}}, status=401)
        body = await request.json()
        self.requests.append(body)
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        content = f"[{body['model']}] {system.split()[0].lower()}: {user[:40]}"
        message = {"role": "assistant", "content": content}
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 8, "total_tokens": 8},
            }
        )


if __name__ == "__main__":
    run_forever(ChatApi().app(), 8703)
