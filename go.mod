module github.com/decap-ci/decap

go 1.26
