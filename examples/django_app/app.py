"""A Django project in one module, served by workers through the gateway.

Settings, views and URLs are all here so the example reads top to bottom; a real project keeps
its usual layout and points the worker at its ``asgi.py`` the same way:

    distributed-asgi up examples.django_app.app:application --workers 2

HTTP goes to Django's own ASGI handler (``get_asgi_application()``). WebSockets go to a Django
Channels consumer: a chat room whose messages reach every member through this package's Redis
channel layer, whichever worker each member's connection landed on. The layer uses
``$REDIS_URL`` (``distributed-asgi up`` sets it for its workers) and ``$CHAT_PREFIX``.
"""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    USE_TZ=True,
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "distributed_asgi.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("REDIS_URL", "redis://localhost:6379/0")],
                "prefix": os.environ.get("CHAT_PREFIX", "chat"),
            },
        }
    },
)
django.setup()


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"Hello from Django, served by worker {os.getpid()}\n")


def hello(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse(
        {
            "message": f"Hello, {name}!",
            "path": request.path,
            "query": request.GET.dict(),
            "worker_pid": os.getpid(),
        }
    )


@csrf_exempt
def echo(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    return HttpResponse(request.body, content_type=request.content_type or "text/plain")


urlpatterns = [
    path("", index),
    path("hello/<str:name>/", hello),
    path("echo/", echo),
]

# Imported after settings.configure(): these read the settings.
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Everyone in ``/ws/chat/<room>/`` gets every message sent to that room."""

    async def connect(self) -> None:
        self.room = "chat-" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send_json({"joined": self.room, "worker_pid": os.getpid()})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive_json(self, content: dict[str, object], **kwargs: object) -> None:
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": content.get("text", "")}
        )

    async def chat_message(self, event: dict[str, object]) -> None:
        await self.send_json({"text": event["text"], "worker_pid": os.getpid()})


application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([path("ws/chat/<slug:room>/", ChatConsumer.as_asgi())]),
    }
)
