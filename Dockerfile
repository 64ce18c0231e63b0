# The ringlb image: one static binary, nothing else. FROM scratch needs no base image, so it builds
# where no registry can be reached. The same image is the load balancer (`run`) and a replica
# (`server`, the default). Build it with `make image`, which builds the static binary first and
# sends only it and this file to the engine.
FROM scratch
COPY ringlb /ringlb
EXPOSE 5000
ENTRYPOINT ["/ringlb"]
CMD ["server"]
