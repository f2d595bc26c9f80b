package adminapi

import (
	"errors"
	"net/http"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
)

// retryAfterSeconds is the Retry-After of a 503.
const retryAfterSeconds = 1

// toAPIError turns what an operation returned into what the client is told.
// Errors the store reports for a key ID are resource_not_found; a failure
// that is not an outcome docs/api.md names (a store that cannot be
// reached, or anything unforeseen) is 503 store_unavailable: keygate
// answers no 500.
func toAPIError(err error) *apierror.Error {
	var e *apierror.Error
	var ve *keystore.ValidationError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &ve):
		return validationError(ve)
	case errors.Is(err, keystore.ErrNotFound):
		return &apierror.Error{Status: http.StatusNotFound, Code: "resource_not_found",
			Message: "not found", LongMessage: "no API key with this ID", Err: err}
	case errors.Is(err, keystore.ErrInvalidationUnconfirmed):
		return &apierror.Error{Status: http.StatusServiceUnavailable, Code: "invalidation_unconfirmed",
			Message: "invalidation unconfirmed",
			LongMessage: "the change is stored, but not every verifier could be confirmed to have dropped its cached copy; " +
				"every verifier applies it within its stale window; repeat the call to publish again",
			RetryAfter: retryAfterSeconds, Err: err}
	}
	return &apierror.Error{Status: http.StatusServiceUnavailable, Code: "store_unavailable",
		Message: "store unavailable", LongMessage: "the key store cannot be reached; retry later",
		RetryAfter: retryAfterSeconds, Err: err}
}

func validationError(ve *keystore.ValidationError) *apierror.Error {
	if ve.Missing {
		return &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_missing",
			Message: "is missing", LongMessage: ve.Error(), Param: ve.Param, Err: ve}
	}
	return &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid",
		Message: "is invalid", LongMessage: ve.Error(), Param: ve.Param, Err: ve}
}

// verifyError maps a refused verification to the 404 codes of docs/api.md;
// Clerk's SDK reads any 404 from verify as "token invalid".
func verifyError(err error) error {
	notFound := func(code, msg, long string) error {
		return &apierror.Error{Status: http.StatusNotFound, Code: code, Message: msg, LongMessage: long, Err: err}
	}
	switch {
	case errors.Is(err, keystore.ErrUnavailable):
		return err
	case errors.Is(err, keystore.ErrMalformed):
		return notFound("api_key_invalid", "invalid API key", "the secret is not a well-formed API key (wrong form or checksum)")
	case errors.Is(err, keystore.ErrNotFound):
		return notFound("api_key_not_found", "API key not found", "no API key matches this secret")
	case errors.Is(err, keystore.ErrRevoked):
		return notFound("api_key_revoked", "API key revoked", "the API key has been revoked")
	case errors.Is(err, keystore.ErrDisabled):
		return notFound("api_key_disabled", "API key disabled", "the API key is disabled")
	case errors.Is(err, keystore.ErrExpired):
		return notFound("api_key_expired", "API key expired", "the API key has expired")
	case errors.Is(err, keystore.ErrMissing):
		return &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_missing",
			Message: "is missing", LongMessage: "secret is missing", Param: "secret", Err: err}
	case errors.Is(err, keystore.ErrRateLimited), errors.Is(err, keystore.ErrUsageExceeded),
		errors.Is(err, keystore.ErrIPNotAllowed):
		return middleware.Error(err)
	}
	return err
}

func badBody(param, long string, err error) *apierror.Error {
	return &apierror.Error{Status: http.StatusBadRequest, Code: "request_body_invalid",
		Message: "request body invalid", LongMessage: long, Param: param, Err: err}
}

func badQuery(param, long string) *apierror.Error {
	return &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid",
		Message: "is invalid", LongMessage: long, Param: param}
}
