"""Pages outside the API: the demo."""

import json
import os

from django.http import HttpResponseNotFound
from django.shortcuts import render

from stepstream import config


def demo(request):
    path = config.data_dir() / "demo.json"
    if not os.environ.get("STEPSTREAM_DEMO") or not path.exists():
        return HttpResponseNotFound(
            "No demo here: start the server with `stepstream serve --demo`.",
            content_type="text/plain",
        )
    from stepstream.demo import DEMO_PERSON

    keys = json.loads(path.read_text())
    context = {"config": {"key": keys["publishable_key"], "personKey": DEMO_PERSON}}
    return render(request, "stepstream/demo.html", context)
