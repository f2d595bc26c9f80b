package console

import (
	"fmt"
	"strconv"
	"time"

	"github.com/keygate/keygate/keystore"
)

// The usage chart's drawing area, in SVG user units; CSS scales it to the
// page's width.
const (
	chartW     = 600
	chartH     = 160
	chartTop   = 10
	chartLeft  = 40
	chartRight = 10
	chartAxis  = 20 // below the bars, for the time labels
)

// chart is a key's usage history drawn as stacked bars: admitted
// verifications below, refused ones above.
type chart struct {
	Label   string // the range, in words
	Width   int
	Height  int
	Bars    []bar
	Ticks   []tick // along the time axis
	YTicks  []tick // along the count axis
	Valid   int64  // the totals of the range
	Refused int64
	Summary string // the chart in one sentence, for screen readers
	Base    int    // the y of the time axis
	Left    int
	Right   int
}

type bar struct {
	X, W                 string
	ValidY, ValidH       string
	RefusedY, RefusedH   string
	Title                string
	HasValid, HasRefused bool
}

type tick struct {
	X, Y  string
	Label string
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// newChart lays out h, one bar per bucket.
func newChart(h *keystore.UsageHistory, rg usageRange) *chart {
	c := &chart{Label: rg.Label, Width: chartW, Height: chartH + chartTop + chartAxis,
		Base: chartTop + chartH, Left: chartLeft, Right: chartW - chartRight}
	n := len(h.Data)
	var top int64
	for _, p := range h.Data {
		valid, refused := split(p)
		c.Valid += valid
		c.Refused += refused
		top = max(top, valid+refused)
	}
	c.Summary = fmt.Sprintf("%s: %d verifications admitted, %d refused.", rg.Label, c.Valid, c.Refused)
	if n == 0 {
		return c
	}
	scale := niceCeil(top)
	step := float64(chartW-chartLeft-chartRight) / float64(n)
	layout := "15:04"
	if rg.Granularity == "day" {
		layout = "Jan 2"
	}
	every := max(1, n/6)
	for i, p := range h.Data {
		valid, refused := split(p)
		x := float64(chartLeft) + float64(i)*step
		vh := float64(chartH) * float64(valid) / float64(scale)
		rh := float64(chartH) * float64(refused) / float64(scale)
		at := time.UnixMilli(p.T).UTC()
		b := bar{X: f1(x + step*0.1), W: f1(step * 0.8),
			ValidY: f1(float64(chartTop+chartH) - vh), ValidH: f1(vh),
			RefusedY: f1(float64(chartTop+chartH) - vh - rh), RefusedH: f1(rh),
			Title:    fmt.Sprintf("%s UTC: %d admitted, %d refused", at.Format("2006-01-02 15:04"), valid, refused),
			HasValid: valid > 0, HasRefused: refused > 0}
		c.Bars = append(c.Bars, b)
		if i%every == 0 {
			c.Ticks = append(c.Ticks, tick{X: f1(x + step/2), Y: strconv.Itoa(chartTop + chartH + 15), Label: at.Format(layout)})
		}
	}
	yticks := []int64{0, scale}
	if scale%2 == 0 {
		yticks = []int64{0, scale / 2, scale}
	}
	for _, v := range yticks {
		y := float64(chartTop+chartH) - float64(chartH)*float64(v)/float64(scale)
		c.YTicks = append(c.YTicks, tick{X: strconv.Itoa(chartLeft - 4), Y: f1(y + 4), Label: strconv.FormatInt(v, 10)})
	}
	return c
}

// split returns a bucket's admitted and refused verifications.
func split(p keystore.UsagePoint) (valid, refused int64) {
	for i, name := range keystore.HistoryOutcomes {
		if name == "valid" {
			valid += p.Counts[i]
		} else {
			refused += p.Counts[i]
		}
	}
	return valid, refused
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, at least 2.
func niceCeil(v int64) int64 {
	if v <= 2 {
		return 2
	}
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v && m*p >= 2 {
				return m * p
			}
		}
	}
}
