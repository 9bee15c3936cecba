from django.urls import path, re_path

from gateway import health, metrics, views

# botocore percent-encodes the model id (":" and "/" too) and Django decodes it into the path,
# so an ARN's "/" arrives as a path separator: match greedily up to the verb.
_VERBS = "invoke|invoke-with-response-stream|converse|converse-stream|count-tokens"

urlpatterns = [
    path("health", health.health, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
    re_path(
        rf"^bedrock/model/(?P<model_id>.+)/(?P<verb>{_VERBS})$",
        views.bedrock_model,
        name="bedrock-model",
    ),
    path("anthropic/v1/messages", views.messages, name="anthropic-messages"),
    path("anthropic/v1/messages/count_tokens", views.count_tokens, name="anthropic-count-tokens"),
    path("anthropic/v1/models", views.models, name="anthropic-models"),
]
