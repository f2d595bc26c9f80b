// Package boundaries holds no code: its test keeps the package lines of
// docs/packages.md, by checking with "go list -deps" that each public
// package builds none of the modules its users do not need.
package boundaries
