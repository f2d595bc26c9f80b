package keystore

import "github.com/keygate/keygate/keystore/apikey"

// The types a caller of the store passes and gets back are package
// apikey's, which the Go client (keystore/client) shares without building
// Redis or Prometheus; these aliases keep their keystore names.
type (
	APIKey       = apikey.APIKey
	KeyList      = apikey.KeyList
	CreateParams = apikey.CreateParams
	UpdateParams = apikey.UpdateParams
	ListParams   = apikey.ListParams
	GetAllParams = apikey.GetAllParams
	ImportParams = apikey.ImportParams
	ImportHash   = apikey.ImportHash
	RateLimit    = apikey.RateLimit
	Credits      = apikey.Credits
	Refill       = apikey.Refill
	UsageHistory = apikey.UsageHistory
	UsagePoint   = apikey.UsagePoint
)

// KeyType is the only key type there is for now.
const KeyType = apikey.KeyType

// The documented limits (docs/api.md, docs/usage.md): see package apikey.
const (
	MaxNameLen                = apikey.MaxNameLen
	MaxSubjectLen             = apikey.MaxSubjectLen
	MaxDescriptionLen         = apikey.MaxDescriptionLen
	MaxCreatedByLen           = apikey.MaxCreatedByLen
	MaxClaimsBytes            = apikey.MaxClaimsBytes
	MaxScopes                 = apikey.MaxScopes
	MaxScopeLen               = apikey.MaxScopeLen
	DefaultLimit              = apikey.DefaultLimit
	MaxLimit                  = apikey.MaxLimit
	MaxOffset                 = apikey.MaxOffset
	MaxAllowedCIDRs           = apikey.MaxAllowedCIDRs
	MaxSecondsUntilExpiration = apikey.MaxSecondsUntilExpiration
)

// HistoryOutcomes are the outcomes the usage history counts, in the order
// of [UsagePoint.Counts]. It points to [apikey.HistoryOutcomes], so that
// there is one list: index and range it as the array itself.
var HistoryOutcomes = &apikey.HistoryOutcomes
