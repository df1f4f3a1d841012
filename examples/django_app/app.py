"""A Django project in one module, served by workers through the gateway.

Settings, views and URLs are all here so the example reads top to bottom; a real project keeps
its usual layout and points the worker at its ``asgi.py`` the same way:

    distributed-asgi up examples.django_app.app:application --workers 2
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

# Imported after settings.configure(): get_asgi_application() reads the settings.
from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
