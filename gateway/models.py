from django.core.validators import RegexValidator
from django.db import models

# What a client may name on /anthropic: no dots, so that it never looks like a Bedrock id
# (names containing "anthropic." or ARNs pass through the model map untouched).
anthropic_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]*$",
    "Lower-case letters, digits, '-', '_' and '.' only (e.g. claude-haiku-4-5).",
)
# A base model id ("anthropic.claude-…"), which gets the configured region prefix, or a full
# inference-profile id ("global.anthropic.claude-…") or ARN, which is used as it is.
bedrock_model_id_validator = RegexValidator(
    r"^(arn:aws[a-z-]*:bedrock:\S+|([a-z-]+\.)?anthropic\.claude-[a-z0-9.:-]+)$",
    "A Bedrock model id (anthropic.claude-…), an inference-profile id or an ARN.",
)


class ModelAlias(models.Model):
    """An Anthropic model name (claude-haiku-4-5) and the Bedrock model it is served by."""

    anthropic_name = models.CharField(
        max_length=100, unique=True, validators=[anthropic_name_validator]
    )
    bedrock_model_id = models.CharField(
        max_length=300,
        validators=[bedrock_model_id_validator],
        help_text=(
            "Base id such as anthropic.claude-haiku-4-5-20251001-v1:0 (the region prefix from "
            "aws.model_prefix is added), or a full inference-profile id / ARN used as it is."
        ),
    )
    display_name = models.CharField(max_length=100, blank=True)
    released_at = models.DateField(
        null=True, blank=True, help_text="Shown as created_at in GET /anthropic/v1/models."
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive names answer 404 and are not listed."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "model alias"
        verbose_name_plural = "model aliases"
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(anthropic_name=""), name="modelalias_name_not_empty"
            ),
            models.CheckConstraint(
                condition=~models.Q(bedrock_model_id=""), name="modelalias_bedrock_id_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.anthropic_name} → {self.bedrock_model_id}"
