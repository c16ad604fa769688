module github.com/open-lambda/ol-shim

go 1.26.8
