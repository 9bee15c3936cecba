"""Django admin for model prices: rates edited in USD per million tokens, plus a CSV import page
(upload -> preview with errors by row -> apply)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from costs import services
from costs.models import ModelPrice
from costs.money import micros_to_usd_per_mtok, rate_usd, usd_per_mtok_to_micros


class ModelPriceForm(forms.ModelForm):
    """Rates as decimal USD per million tokens, stored exactly as micro-dollars."""

    input = forms.CharField(label="Input (USD / Mtok)")
    output = forms.CharField(label="Output (USD / Mtok)")
    cache_write_5m = forms.CharField(label="5-minute cache write (USD / Mtok)")
    cache_write_1h = forms.CharField(label="1-hour cache write (USD / Mtok)")
    cache_read = forms.CharField(label="Cache read (USD / Mtok)")

    class Meta:
        model = ModelPrice
        fields = [
            "model_id",
            "scope",
            "region",
            "effective_from",
            "long_prompt_threshold_tokens",
            "long_prompt_multiplier",
            "source",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            for name in services.RATE_FIELDS:
                self.initial[name] = micros_to_usd_per_mtok(getattr(self.instance, f"{name}_rate"))

    def clean(self) -> dict:
        cleaned = super().clean()
        for name in services.RATE_FIELDS:
            if name in cleaned:
                try:
                    setattr(self.instance, f"{name}_rate", usd_per_mtok_to_micros(cleaned[name]))
                except ValueError as exc:
                    self.add_error(name, str(exc))
        if cleaned.get("model_id"):
            try:
                base, prefix_scope = services.price_model_id_clean(cleaned["model_id"])
            except services.PriceError as exc:
                self.add_error("model_id", exc.message)
            else:
                cleaned["model_id"] = base
                if prefix_scope and not cleaned.get("scope"):
                    cleaned["scope"] = prefix_scope
        if (cleaned.get("long_prompt_threshold_tokens") is None) != (
            cleaned.get("long_prompt_multiplier") is None
        ):
            raise ValidationError("The long-prompt threshold and multiplier go together.")
        return cleaned


class CsvUploadForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV, at most 5 MB; see the header formats below.")


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = [
        "model_id",
        "scope",
        "region",
        "effective_from",
        "input_usd",
        "output_usd",
        "cache_write_5m_usd",
        "cache_write_1h_usd",
        "cache_read_usd",
        "long_prompt_threshold_tokens",
        "long_prompt_multiplier",
    ]
    list_filter = ["scope", "region", "effective_from"]
    search_fields = ["model_id", "source"]
    date_hierarchy = "effective_from"
    readonly_fields = ["created_at", "updated_at"]
    change_list_template = "admin/costs/modelprice/change_list.html"

    @admin.display(description="input $/Mtok", ordering="input_rate")
    def input_usd(self, obj: ModelPrice) -> str:
        return rate_usd(obj.input_rate)

    @admin.display(description="output $/Mtok", ordering="output_rate")
    def output_usd(self, obj: ModelPrice) -> str:
        return rate_usd(obj.output_rate)

    @admin.display(description="5m write $/Mtok", ordering="cache_write_5m_rate")
    def cache_write_5m_usd(self, obj: ModelPrice) -> str:
        return rate_usd(obj.cache_write_5m_rate)

    @admin.display(description="1h write $/Mtok", ordering="cache_write_1h_rate")
    def cache_write_1h_usd(self, obj: ModelPrice) -> str:
        return rate_usd(obj.cache_write_1h_rate)

    @admin.display(description="cache read $/Mtok", ordering="cache_read_rate")
    def cache_read_usd(self, obj: ModelPrice) -> str:
        return rate_usd(obj.cache_read_rate)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.import_view)
        return [path("import-csv/", view, name="costs_modelprice_import"), *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload shows a preview (or the errors by row); Apply imports the previewed text."""
        if not self.has_add_permission(request) or not self.has_change_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import model prices from CSV",
            "form": CsvUploadForm(),
            "our_header": ",".join(services.OUR_COLUMNS) + ",source",
            "rust_header": ",".join(services.RUST_COLUMNS),
        }
        if request.method == "POST" and "apply" in request.POST:
            try:
                result = services.prices_import_csv(text=request.POST.get("csv_text", ""))
            except services.PriceImportError as exc:
                context.update(errors=exc.errors)
            else:
                self.message_user(
                    request,
                    f"Imported {result.format} prices: {result.created} created, "
                    f"{result.updated} updated, {result.unchanged} unchanged.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:costs_modelprice_changelist"))
        elif request.method == "POST":
            form = CsvUploadForm(request.POST, request.FILES)
            context["form"] = form
            if form.is_valid():
                context.update(self._preview(form.cleaned_data["file"]))
        return TemplateResponse(request, "admin/costs/modelprice/import.html", context)

    @staticmethod
    def _preview(upload) -> dict:
        if upload.size > services.MAX_IMPORT_BYTES:
            return {"errors": [services.RowError(None, None, "file is larger than 5 MB")]}
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            return {"errors": [services.RowError(None, "file", "file is not UTF-8 text")]}
        preview = services.prices_import_preview(text=text)
        rows = [
            {
                "row": item.row,
                "action": item.action,
                "data": item.data,
                "rates": [
                    micros_to_usd_per_mtok(getattr(item.data, f"{name}_rate"))
                    for name in services.RATE_FIELDS
                ],
            }
            for item in preview.rows
        ]
        return {
            "preview": preview,
            "rows": rows,
            "errors": preview.errors,
            "csv_text": text if preview.ok else "",
        }
