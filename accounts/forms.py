"""Forms for local accounts (only with `auth.local_passwords`)."""

from allauth.account.forms import SignupForm
from django import forms

from accounts.services import email_domain_allowed


class LocalSignupForm(SignupForm):
    """allauth's signup, limited to `auth.allowed_email_domains`."""

    def clean_email(self) -> str:
        email = super().clean_email()
        if not email_domain_allowed(email):
            raise forms.ValidationError("This e-mail domain may not sign up here.")
        return email
